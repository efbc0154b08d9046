"""Backbone loading, the model card, the sparse head and its variants."""
