"""What the user reads: figures (``figures``); the HTML report's parts come here."""
