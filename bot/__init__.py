"""The Discord side of Atelier: slash commands, buttons and result delivery."""
