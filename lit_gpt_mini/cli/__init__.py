"""The command line of ``main.py``: the dispatch and LightningCLI (main), command names (commands), the user's
mistakes as one line (errors), and ``prepare``."""
