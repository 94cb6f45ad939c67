"""What every floor above may use: atomic writes, where the project's data lives, host facts and tools."""
