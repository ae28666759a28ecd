"""The box's side of federated fine-tuning: its labelled cases and Flower's ClientApp."""
