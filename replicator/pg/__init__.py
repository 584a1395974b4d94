"""PostgreSQL edge (psycopg), shared by the source and the target side: sessions, catalog, types, errors."""
