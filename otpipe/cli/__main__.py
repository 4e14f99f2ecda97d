"""``python -m otpipe.cli``: the ``otpipe`` command."""
from otpipe.cli import main

main()
