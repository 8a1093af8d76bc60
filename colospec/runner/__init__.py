"""colospec run: executes the artifacts that colospec build wrote for one host."""
