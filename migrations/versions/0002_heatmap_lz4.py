"""PostgreSQL: compress the stored heatmap HTML with lz4 instead of pglz.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Measured on the 25,000-review benchmark: a batch's INSERT spends most of its server time pglz-compressing the
~11 KB heatmaps; lz4 writes a batch about 30 % faster (rows stay far below the 40 KB goal). Servers without lz4
(built without it, or older than PostgreSQL 14) keep pglz; SQLite stores text uncompressed either way.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def set_compression(method: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        DO $$ BEGIN
          EXECUTE 'ALTER TABLE explanations ALTER COLUMN heatmap_html SET COMPRESSION {method}';
        EXCEPTION WHEN OTHERS THEN
          RAISE NOTICE 'compression {method} not available: %', SQLERRM;
        END $$;
        """
    )


def upgrade() -> None:
    set_compression("lz4")


def downgrade() -> None:
    set_compression("pglz")
