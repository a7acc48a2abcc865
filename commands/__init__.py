"""The operator CLI's command groups, one module each. A command parses its options, calls one function
of a package below, and hands the result to :mod:`commands.render`; ``cli.py`` holds the root group."""
