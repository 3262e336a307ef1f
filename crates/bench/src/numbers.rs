//! Phone numbers for the load: random people of the US and the UK that libphonenumber accepts as
//! valid, never in the pool ranges that `scripts/bench/seed.sql` gives the pool.
//!
//! Ranges, to keep in step with `seed.sql`:
//! - pool numbers: US `1212555` + 4 digits, GB `44740000` + 4 digits;
//! - people drawn here: US `1`, an area code (212, 646, 917, 718), an exchange 200-999 other than
//!   555, then 4 digits; GB mobiles `447500`, `447800`, `447900` then 6 digits, and `447400` then
//!   100000-999999 (libphonenumber refuses some other mobile ranges, `447911 3xxxxx` for one).
//!
//! Seeded people (`1646 2xx`, `1917 2xx`, `447500 xxxxxx`) are inside the ranges drawn here on
//! purpose: now and then the load pairs someone who already holds pairings, as in real use.

use fastrand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Country {
    Us,
    Gb,
}

impl Country {
    pub fn random(rng: &mut Rng) -> Self {
        if rng.bool() { Self::Us } else { Self::Gb }
    }

    #[cfg(test)]
    pub fn alpha2(self) -> &'static str {
        match self {
            Self::Us => "US",
            Self::Gb => "GB",
        }
    }
}

const US_AREA_CODES: [u16; 4] = [212, 646, 917, 718];
/// The exchange of the US pool range (`1212555xxxx`): never drawn, in any area code.
const US_POOL_EXCHANGE: u16 = 555;

/// A random person's number in `country`, as E.164 digits without `+`.
pub fn person(rng: &mut Rng, country: Country) -> String {
    match country {
        Country::Us => {
            let area = US_AREA_CODES[rng.usize(..US_AREA_CODES.len())];
            let exchange = loop {
                let e = rng.u16(200..=999);
                if e != US_POOL_EXCHANGE {
                    break e;
                }
            };
            format!("1{area}{exchange}{:04}", rng.u16(..10_000))
        }
        Country::Gb => match rng.u8(..4) {
            0 => format!("447500{:06}", rng.u32(..1_000_000)),
            1 => format!("447800{:06}", rng.u32(..1_000_000)),
            2 => format!("447900{:06}", rng.u32(..1_000_000)),
            // 447400 000000-099999 holds the pool range; stay above it.
            _ => format!("447400{:06}", rng.u32(100_000..1_000_000)),
        },
    }
}

/// Two different people of `country`.
pub fn two_people(rng: &mut Rng, country: Country) -> (String, String) {
    let a = person(rng, country);
    loop {
        let b = person(rng, country);
        if b != a {
            return (a, b);
        }
    }
}

/// Whether `digits` is in a pool range of `seed.sql`.
#[cfg(test)]
pub fn is_seeded_pool_number(digits: &str) -> bool {
    (digits.len() == 11 && digits.starts_with("1212555"))
        || (digits.len() == 12 && digits.starts_with("44740000"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use voice_proxy_domain::PhoneNumber;

    #[test]
    fn drawn_people_are_valid_numbers_of_their_country_and_never_pool_numbers() {
        let mut rng = Rng::with_seed(7);
        for _ in 0..20_000 {
            for country in [Country::Us, Country::Gb] {
                let n = person(&mut rng, country);
                let parsed = PhoneNumber::parse(&n).unwrap_or_else(|e| panic!("{n}: {e}"));
                assert_eq!(parsed.expose(), n);
                assert_eq!(
                    parsed.country().as_ref().map(|c| c.as_str()),
                    Some(country.alpha2()),
                    "{n}"
                );
                assert!(!is_seeded_pool_number(&n), "{n}");
            }
        }
    }

    #[test]
    fn two_people_differ() {
        let mut rng = Rng::with_seed(1);
        for _ in 0..1_000 {
            let (a, b) = two_people(&mut rng, Country::Gb);
            assert_ne!(a, b);
        }
    }

    #[test]
    fn seeded_pool_ranges_are_recognised() {
        assert!(is_seeded_pool_number("12125550000"));
        assert!(is_seeded_pool_number("12125559999"));
        assert!(is_seeded_pool_number("447400000000"));
        assert!(is_seeded_pool_number("447400009999"));
        assert!(!is_seeded_pool_number("447400100000"));
        assert!(!is_seeded_pool_number("12125560000"));
    }
}
