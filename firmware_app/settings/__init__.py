"""The box's settings: the TOML-to-dataclass loader and the box's sections."""
