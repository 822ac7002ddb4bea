"""Using a trained model: sampling (generate), talking to it (chat, conversation, textstream), serving it over
HTTP (serve, the playground page) and taking it out of the project (export)."""
