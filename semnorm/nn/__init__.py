"""semnorm.nn: drop-in normalization layers (SPADE, CLADE, SEAN, SCN, SCC) on semnorm's ops."""
