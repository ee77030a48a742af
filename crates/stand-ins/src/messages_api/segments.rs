//! How many SMS segments a body takes, as Twilio counts them for a message's
//! `num_segments`: a body written only in the GSM-7 alphabet takes 160 characters in
//! one segment and 153 in each of several (an extension character counts twice); any
//! other character makes the whole body UCS-2, 70 UTF-16 units in one segment and 67
//! in each of several.
//! <https://www.twilio.com/docs/glossary/what-sms-character-limit>,
//! <https://www.twilio.com/docs/glossary/what-is-gsm-7-character-encoding>

/// GSM 03.38's basic alphabet (the escape to the extension table left out).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38's extension table: each takes two septets.
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// The segments an SMS with `body` is sent in; at least one (a message with media
/// only is one MMS).
pub fn count(body: &str) -> usize {
    let septets: Option<usize> = body
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (units, single, each) = match septets {
        Some(septets) => (septets, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    if units <= single {
        1
    } else {
        units.div_ceil(each)
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn gsm7_bodies_take_160_then_153_per_segment() {
        assert_eq!(count(""), 1);
        assert_eq!(count(&"a".repeat(160)), 1);
        assert_eq!(count(&"a".repeat(161)), 2);
        assert_eq!(count(&"a".repeat(306)), 2);
        assert_eq!(count(&"a".repeat(307)), 3);
        assert_eq!(count(&"a".repeat(1600)), 11);
    }

    #[test]
    fn extension_characters_count_twice() {
        assert_eq!(count(&"€".repeat(80)), 1);
        assert_eq!(count(&"€".repeat(81)), 2);
    }

    #[test]
    fn one_character_outside_gsm7_makes_the_body_ucs2() {
        assert_eq!(count(&"a".repeat(69)), 1);
        assert_eq!(count(&format!("{}ł", "a".repeat(69))), 1);
        assert_eq!(count(&format!("{}ł", "a".repeat(70))), 2);
        // An emoji is two UTF-16 units.
        assert_eq!(count(&"🍕".repeat(35)), 1);
        assert_eq!(count(&"🍕".repeat(36)), 2);
    }
}
