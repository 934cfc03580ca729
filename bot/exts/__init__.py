"""One extension package per feature: ``__init__`` holds ``setup``; ``_cog`` the
Discord I/O, ``_views`` the persistent components, ``_logic`` the pure parts."""
