"""Evaluation: a version on the holdout (ROC-AUC with its interval, calibration, subgroups), its
decision threshold and risk bands, and the model card that reports all of it."""
