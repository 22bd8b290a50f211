// Console sign-in through the city's identity provider in Debian's chromium:
// the sign-in page's button, the provider's own form, back signed in with the
// role the group gives; axe-core scans the sign-in page and the page of a person
// without a role. Any failure or violation fails the run.
// Usage: node oidc.mjs <config.json>   { "base": url, "duty": sub, "nobody": sub }
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";
import AxeBuilder from "@axe-core/playwright";

const { base, duty, nobody } = JSON.parse(readFileSync(process.argv[2], "utf8"));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
const failures = [];

async function scan(page, name) {
  const result = await new AxeBuilder({ page })
    .withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"])
    .analyze();
  for (const v of result.violations) {
    failures.push(`${name}: ${v.id} (${v.impact}): ${v.help}`);
  }
  console.log(`scanned ${name}: ${result.violations.length} violations`);
}

async function signInAs(sub) {
  const context = await browser.newContext({ viewport: { width: 390, height: 800 }, locale: "sv-SE" });
  const page = await context.newPage();
  await page.goto(`${base}/konsol`);
  await page.getByRole("link", { name: "Logga in med stadens inloggning" }).click();
  // The provider's own form: who signs in.
  await page.locator("input[name=sub]").fill(sub);
  await page.getByRole("button", { name: "Authorize" }).click();
  await page.waitForLoadState("load");
  return page;
}

try {
  const first = await (await browser.newContext({ locale: "sv-SE" })).newPage();
  await first.goto(`${base}/konsol/logga-in`);
  await scan(first, "sign-in page with the city's sign-in");

  const page = await signInAs(duty);
  if (new URL(page.url()).pathname !== "/konsol") failures.push(`duty officer landed on ${page.url()}`);
  const text = await page.textContent("body");
  if (!text.includes(duty)) failures.push(`the console does not name ${duty}`);
  await page.goto(`${base}/konsol/ny-kris`);
  if (!(await page.getByRole("heading", { level: 1 }).textContent()).trim()) failures.push("no declaration page");

  const refused = await signInAs(nobody);
  const heading = await refused.getByRole("heading", { level: 1 }).textContent();
  if (!heading.includes("Du har ingen roll i krisbud")) failures.push(`no-role page says: ${heading}`);
  await scan(refused, "no-role page");
} catch (e) {
  failures.push(String(e));
}
await browser.close();
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log("oidc ok");
