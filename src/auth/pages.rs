//! The gateway's own HTML: a login form with no external assets that works
//! without JavaScript. Every interpolated value is HTML-escaped.

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the login page shows.
pub struct Login<'a> {
    /// The session's anti-CSRF secret, a hidden field of the form.
    pub csrf: &'a str,
    /// Where to go once signed in (already checked same-origin).
    pub rd: &'a str,
    /// Shown above the form when set.
    pub error: Option<&'a str>,
    /// The username and password form (`[[users]]`).
    pub passwords: bool,
    /// The OpenID provider's button, with this label.
    pub sso: Option<&'a str>,
    /// A step-up route's bound on the sign-in's age, in seconds, passed on
    /// to the provider's button.
    pub max_age: Option<u64>,
}

/// The login page.
pub fn login(page: &Login<'_>) -> String {
    let error = page
        .error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let sso = page
        .sso
        .map(|name| {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("rd", page.rd);
            if let Some(age) = page.max_age {
                query.append_pair("max_age", &age.to_string());
            }
            let href = format!("/.sessiongate/oidc/start?{}", query.finish());
            format!(
                "<a class=\"sso\" href=\"{}\">Sign in with {}</a>\n",
                escape(&href),
                escape(name)
            )
        })
        .unwrap_or_default();
    let fields = if page.passwords {
        format!(
            r#"<label for="username">Username</label>
<input type="text" id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="rd" value="{rd}">
<button type="submit">Sign in</button>
"#,
            csrf = escape(page.csrf),
            rd = escape(page.rd),
        )
    } else {
        String::new()
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f5f7; display: flex; justify-content: center; padding-top: 10vh; margin: 0; }}
form {{ background: #fff; padding: 2rem; border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.15); width: 18rem; }}
h1 {{ font-size: 1.3rem; margin-top: 0; }}
label {{ display: block; margin: .8rem 0 .3rem; font-size: .9rem; }}
input[type=text], input[type=password] {{ width: 100%; box-sizing: border-box; padding: .5rem; border: 1px solid #bbb; border-radius: 4px; }}
button, .sso {{ display: block; box-sizing: border-box; margin-top: 1.2rem; width: 100%; padding: .6rem; border: 0; border-radius: 4px; background: #2557d6; color: #fff; font-size: 1rem; text-align: center; text-decoration: none; }}
.error {{ color: #b00020; font-size: .9rem; }}
</style>
</head>
<body>
<form method="post" action="/.sessiongate/login">
<h1>Sign in</h1>
{error}
{sso}{fields}</form>
</body>
</html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_interpolated() {
        let page = login(&Login {
            csrf: "c\"><script>",
            rd: "/x?a=<b>",
            error: Some("<bad>"),
            passwords: true,
            sso: Some("<i>SSO</i>"),
            max_age: Some(300),
        });
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<i>"));
        assert!(page.contains("/.sessiongate/oidc/start?rd=%2Fx%3Fa%3D%3Cb%3E&amp;max_age=300"));
        assert!(!page.contains("<b>"));
        assert!(!page.contains("<bad>"));
        assert!(page.contains("&lt;bad&gt;"));
    }
}
