"""Release: the promotion gate, evaluate-and-promote, every change of the production version
(promotion, rollback, a person's decision, live evidence), the ledger that records them, the
version history, and the registry webhooks that tell the API."""
