"""``bench dashboard``: a web page for the bench's jobs (optional extra ``dashboard``).

data.py reads (the CLI's functions, no Celery import), actions.py acts (the CLI's functions,
logged with the user), auth.py logs users in, app.py serves pages, server.py runs uvicorn.
"""
