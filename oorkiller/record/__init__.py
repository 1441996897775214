"""Records: the logfmt format, the budgeted /dev/kmsg writer, and the reader
that `oorkiller events` uses to read them back."""
