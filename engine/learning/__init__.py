"""What a box can learn from its own labelled cases without PyTorch (issue 60)."""
