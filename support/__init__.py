"""Support code below the original's files: dreamer.py, models.py, tools.py
and wrappers.py call into these modules in one line; no module here imports
those files or the entry scripts (tests/test_layout.py checks both)."""
