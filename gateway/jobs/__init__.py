"""Durable jobs: the tables and store, the runner that drives each job, results and webhooks."""
