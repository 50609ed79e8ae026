"""Finding things: NORA's file patterns and filter bars, their SQL, selections and the studies table."""
