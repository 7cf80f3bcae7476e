"""What the user reads: figures (``figures``), the long study table (``tidy``) and the cohort
statistics on it (``stats``); the HTML report's parts come here."""
