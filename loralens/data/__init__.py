"""Audio decoding, corpora, speaker-independent folds, feature extraction and its cache, batching."""
