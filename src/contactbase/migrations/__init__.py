"""The schema's migrations (Alembic, date-named revisions) and how to find them."""

from alembic.config import Config
from alembic.script import ScriptDirectory


def migrations_config(database_url: str | None = None) -> Config:
    """Alembic's configuration for the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", "contactbase:migrations")
    if database_url is not None:
        config.attributes["database_url"] = database_url
    return config


def schema_head() -> str | None:
    """The revision this version of contactbase needs."""
    return ScriptDirectory.from_config(migrations_config()).get_current_head()
