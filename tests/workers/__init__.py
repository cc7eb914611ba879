"""Scripts and functions the tests run in subprocesses (fresh interpreters, several processes, torchrun)."""
