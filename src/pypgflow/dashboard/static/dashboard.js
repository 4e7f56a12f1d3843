// The dashboard's one script: "select all" on the runs page. Everything else is plain HTML
// forms and htmx attributes.
document.addEventListener("change", (event) => {
  const box = event.target;
  if (box && box.id === "select-all") {
    for (const run of document.querySelectorAll('input[name="run_id"]')) run.checked = box.checked;
  }
});
