"""`manage.py consume`: the dashboard consumer, one behaviour per module.

- loop.py: the poll loop, the group's rebalance callbacks and retries (DashboardConsumer)
- batch.py: one batch, parsed (pure) then applied; events of unknown counts
- commits.py: offset commits, after the effects and spaced in time
- dead_letters.py: poison messages to the dead-letter topic
- replay.py: --from-beginning / --reset-to, their start offsets and progress bar
- reporting.py: Prometheus figures per batch, lag and rate for the dashboard
- metrics.py: the Prometheus metrics themselves
"""
