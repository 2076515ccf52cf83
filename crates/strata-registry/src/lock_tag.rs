//! The tag under which strata finds an image by what it is made of rather than by the spec
//! that asked for it: `lock-` and 16 hex digits of the lock, base and layer format. Builds push
//! it next to the spec's `env-` tag; a later build of another spec that resolves to the same
//! lock on the same base finds the image under it and only tags it again (the registry as a
//! shared cache). Registry GC recognises it as strata's by recomputing it from the image's
//! own annotations.

use strata_oci::Digest;

use crate::reference::Tag;

const LOCK_TAG_PREFIX: &str = "lock-";

/// The lock tag of an image of `lock` on `base` in `layer_format`.
pub fn lock_tag(lock: &Digest, base: &Digest, layer_format: &str) -> Tag {
    // The three parts are joined with a separator none of them can hold, so no two triples
    // give the same input.
    let key = Digest::of(format!("strata lock image\n{lock}\n{base}\n{layer_format}").as_bytes());
    Tag::from_validated(format!("{LOCK_TAG_PREFIX}{}", key.short(16)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_changes_with_each_part() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let tag = lock_tag(&a, &b, "1");
        assert!(tag.as_str().starts_with("lock-") && tag.as_str().len() == 21);
        assert_eq!(tag, lock_tag(&a, &b, "1"));
        assert_ne!(tag, lock_tag(&b, &a, "1"));
        assert_ne!(tag, lock_tag(&a, &b, "2"));
    }
}
