"""Renderers: one module per artifact kind; each turns the model into file contents."""
