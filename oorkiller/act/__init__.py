"""Acting: the only code that changes the machine (signals, deletion,
truncation, setting a link down, running hooks), and the only code that
writes action records."""
