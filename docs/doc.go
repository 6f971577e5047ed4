// Package docs is weft's documentation: the pages under docs/, with
// README.md and BENCHMARKS.md at the repository's root. It holds no code;
// its tests keep the pages true to the code, and fail when:
//   - a flag weftd accepts (config.Options.AddFlags) has no row in the
//     Flags table of configuration.md, or an environment variable weftd or
//     one of the packages it links reads is missing from its Environment
//     variables section;
//   - a metric family weftd exports (metrics.New's registry, and any family
//     declared in weftd's packages) is missing from observability.md;
//   - a make target (.PHONY or a rule in the Makefile) is missing from
//     development.md;
//   - a relative link or image in README.md, BENCHMARKS.md or docs/*.md
//     points at no file, or its #anchor at no heading;
//   - prose carries a date, a time of day or a session's story;
//   - README.md grows over 220 lines.
//
// The tests read files only and need no root.
package docs
