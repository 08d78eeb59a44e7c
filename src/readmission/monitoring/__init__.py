"""Monitoring: the log of served predictions and their outcomes, the realized performance of
each served version, and input drift against the training data."""
