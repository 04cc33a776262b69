"""One module per pipeline rule: its ``nast`` subcommand entry (PARAMS_KEYS, add_arguments, run)."""
