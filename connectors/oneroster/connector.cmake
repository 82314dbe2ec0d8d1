# oneroster-csv-sink: keeps SS 12000 state in SQLite, writes OneRoster 1.2 bulk CSV bundles.
# zlib: deflate and CRC-32 for the optional zip bundle (Debian: zlib1g-dev).
pkg_check_modules(ZLIB REQUIRED IMPORTED_TARGET zlib)
sk_connector(SOURCES oneroster_sink.c oneroster_bundle.c oneroster_map.c oneroster_map_schools.c
                     oneroster_map_people.c oneroster_out.c
             SINK_OPS oneroster_sink_ops
             LIBS PkgConfig::SQLITE PkgConfig::ZLIB Threads::Threads)
