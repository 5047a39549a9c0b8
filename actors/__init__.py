"""The actors: arq functions that own VidWiz's asynchronous side effects (one module each).

`python -m actors` runs the worker; `actors.worker.WorkerSettings` is what the arq CLI takes.
"""
