"""The store contract both stages share: object layout, manifest, sinks (file://, S3), compression, checksums, reading back."""
