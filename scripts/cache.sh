# Sourced by book.sh and test.sh. Jupyter Book's cache keys a notebook by its own code only
# (jupyter-book#2233), so the cache is dropped whenever the helper package or requirements change.
# Sphinx's saved doctrees go with it: Sphinx re-reads only the pages whose source changed, and would
# otherwise keep publishing the outputs of a chapter executed with the old helper package.
book_cache_key() { cat requirements.txt dcv/*.py | sha256sum | cut -d' ' -f1; }
book_cache_reset() {
  rm -rf _build/.jupyter_cache _build/.chapters_cached _build/.doctrees
  mkdir -p _build
  book_cache_key > _build/.jupyter_cache.key
}
book_cache_check() { [ "$(cat _build/.jupyter_cache.key 2>/dev/null)" = "$(book_cache_key)" ] || book_cache_reset; }
