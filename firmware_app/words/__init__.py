"""What the box says to people about its own records (statuses, reasons, events, model updates,
labels), in the reader's language: one wording the viewer's pages and the box's commands share."""
