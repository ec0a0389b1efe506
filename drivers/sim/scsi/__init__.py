"""A SCSI emulation of the simulated library, sans I/O.

`changer.execute` takes a CDB and the library state and answers like an SMC-3
medium changer (data, status, sense); `tape.get_status` and `tape.operate` answer
the st driver's MTIOCGET and MTIOCTOP for a drive. Nothing here reads a clock,
sleeps or touches a file: a robot move is answered in two steps (the reply says
how long it takes; `changer.finish` applies it), and the shell that owns the
device nodes does the waiting.
"""
