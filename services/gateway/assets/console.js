// krisbud console: a copy button copies the text of the element it names
// (data-copy) and says so in its own label for a moment. Without JavaScript the
// text stays selectable on the page.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(source.textContent);
    button.textContent = "Kopierat";
  } catch {
    button.textContent = "Markera texten och kopiera själv";
  }
  setTimeout(() => { button.textContent = label; }, 2000);
});
