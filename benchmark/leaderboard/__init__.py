"""The paper's tables: measured rows from MLflow runs beside the published ones."""
