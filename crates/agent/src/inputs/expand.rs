//! `$(VAR)` expansion as upstream does it for `env[].value`, `command`, `args` and
//! `subPathExpr` (k8s.io/kubernetes third_party/forked/golang/expansion): `$(NAME)` is replaced
//! by what `lookup` returns for `NAME`, `$$` is an escaped `$`, and everything else (an
//! unterminated `$(`, a bare `$X`, a trailing `$`) passes through unchanged.

/// Expands `input`; `lookup` resolves a referenced name and returns `None` for an unknown one,
/// which is then left as written (`$(NAME)`).
pub fn expand(input: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    // Everything before `checkpoint` is already in `out`.
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            match rest.as_bytes()[0] {
                // `$$`: an escaped operator, one `$` is kept.
                b'$' => {
                    out.push('$');
                    cursor += 2;
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        cursor += 1 + close + 1;
                    }
                    // An unterminated reference: `$(` is kept and scanning goes on after it.
                    None => {
                        out.push_str("$(");
                        cursor += 2;
                    }
                },
                // A `$` that starts no expression is kept; the next character is copied as
                // ordinary text.
                _ => {
                    out.push('$');
                    cursor += 1;
                }
            }
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&input[checkpoint..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn context() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
        ])
    }

    /// Upstream's table of cases (expand_test.go, doExpansionTest).
    #[test]
    fn upstream_cases() {
        let vars = context();
        let cases = [
            ("$(VAR_A)", "A"),
            ("$(VAR_A)-$(VAR_A)", "A-A"),
            ("$(VAR_A)-1", "A-1"),
            ("___$(VAR_B)___", "___B___"),
            ("___$(VAR_C)", "___C"),
            ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
            ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
            ("$$(VAR_A)_$$(VAR_B)", "$(VAR_A)_$(VAR_B)"),
            ("f000-$$VAR_A", "f000-$VAR_A"),
            ("foo\\$(VAR_C)bar", "foo\\Cbar"),
            ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
            ("foo\\\\\\\\$(VAR_A)bar", "foo\\\\\\\\Abar"),
            ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
            ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
            ("$(VAR_REF)", "$(VAR_A)"),
            ("%%$(VAR_REF)--$(VAR_REF)%%", "%%$(VAR_A)--$(VAR_A)%%"),
            ("foo$(VAR_EMPTY)bar", "foobar"),
            ("foo$(VAR_Awhoops!", "foo$(VAR_Awhoops!"),
            ("f00__(VAR_A)__", "f00__(VAR_A)__"),
            ("$?_boo_$!", "$?_boo_$!"),
            ("$VAR_A", "$VAR_A"),
            ("$(VAR_DNE)", "$(VAR_DNE)"),
            ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
            ("$$$$$$(VAR_A)", "$$$(VAR_A)"),
            ("$$$$$$$(GOOD_ODDS)", "$$$$(GOOD_ODDS)"),
            ("$$$$$$$(VAR_A)", "$$$A"),
            ("$VAR_A)", "$VAR_A)"),
            ("${VAR_A}", "${VAR_A}"),
            ("$(VAR_B)_______$(A", "B_______$(A"),
            ("$(VAR_C)_______$(", "C_______$("),
            ("$(VAR_A)foobarzab$", "Afoobarzab$"),
            ("foo-\\$(VAR_A", "foo-\\$(VAR_A"),
            ("--$($($($($--", "--$($($($($--"),
            ("$($($($($--foo$(", "$($($($($--foo$("),
            ("foo0--$($($($(", "foo0--$($($($("),
            ("$(foo$$var)", "$(foo$$var)"),
            ("\n", "\n"),
        ];
        for (input, expected) in cases {
            let got = expand(input, |name| vars.get(name).map(|v| v.to_string()));
            assert_eq!(got, expected, "input {input:?}");
        }
    }

    #[test]
    fn multibyte_text_survives() {
        let got = expand("é$ü$(VAR_A)ß$", |n| {
            (n == "VAR_A").then(|| "ä".to_string())
        });
        assert_eq!(got, "é$üäß$");
    }
}
