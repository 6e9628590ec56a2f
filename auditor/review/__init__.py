"""`auditor review`: one Markdown comment per submission, from the results of the other commands.

run.py      review a folder or a PR's record folder (classify + claims, smoke on request)
source.py   a PR's record folder from a local clone (refs/pull/N/head against main)
results.py  ReviewResult: the results it ran (the commands' own types), one verdict, the comment
batch.py    every PR head in worker processes; store.py keeps them in SQLite
github.py   posting the comment; the only module that touches the network
command.py  the typer command

The Markdown itself is rendered by auditor/report/markdown.py.
"""
