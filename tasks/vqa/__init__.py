"""Visual question answering: Sort-of-CLEVR builder, grouped-by-image data, cross-modal fusion model."""
