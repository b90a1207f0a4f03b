"""Machine translation: French, German and Spanish dates, numbers and phrases to English."""
