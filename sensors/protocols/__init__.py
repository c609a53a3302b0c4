"""Application-protocol parsers: pure functions over bytes returning flat ECS fields."""
