"""Judging: who may be acted on (rules), what one action kills (units), and
which unit to choose (the four rules). Pure functions over plain values and
process-table entries: nothing here reads a file or changes the machine."""
