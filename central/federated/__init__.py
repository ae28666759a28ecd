"""The hospital's side of federated fine-tuning: Flower's ServerApp and each round's record."""
