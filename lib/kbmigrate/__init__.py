"""kbmigrate: make a Supabase knowledge base workspace-scoped, safely, with proof."""

__version__ = "0.1.0"
