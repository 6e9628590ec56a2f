"""The reference record folder: the hybrid depth-recurrent transformer of PR #341 (see README.md).

A package only so that it installs with `auditor`; the record itself is train_gpt.py.
"""
