"""contactbase: a self-hostable contacts API with Cometly's wire format."""

__version__ = "0.1.0"
