"""Image engines: diffusers in process (and its add-ons), or another Melange; the gallery and the recipe in every PNG."""
